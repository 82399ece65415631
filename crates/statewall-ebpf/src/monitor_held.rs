//! Tests only, never loaded by statewall: the monitor program of `monitor.rs` with a hold.
//! Every 1024th packet a CPU sees (by the CPU's packet counter, which no read resets, so
//! the rate does not depend on how long windows are) waits `SW_MON_TEST_DELAY_NS` between
//! finding its crypto session and counting into it, so that a read that does not wait for
//! the grace period meets a program still writing. The hold must be well above the
//! reader's time from the switch to the copy (about 0.1 ms), or the write lands first.
#![no_std]
#![no_main]
// Inline assembly for the two atomic fetch-and-adds (core has no atomics for this target).
#![feature(asm_experimental_arch)]

mod atomic;
mod parse;
mod pkt;
#[path = "monitor_prog.rs"]
mod prog;

/// How long a held packet waits (set by the loader).
#[no_mangle]
static SW_MON_TEST_DELAY_NS: u32 = 0;

#[inline(always)]
fn hold_ns() -> u32 {
    // SAFETY: a loader global, read as the verifier's constant.
    unsafe { core::ptr::read_volatile(&SW_MON_TEST_DELAY_NS) }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
