//! statewall's monitor object: one tc program, `sw_monitor`, that extracts per-session
//! features (ddos or crypto, chosen by the loader's `SW_MON_KIND`) into the active buffer
//! of double-buffered maps and hands every packet on (`TCX_NEXT`). Every monitor
//! instance is its own load of this object, with its table sizes and capture limits set
//! by the loader, so instances never share a table. Reference logic:
//! `statewall_common::monitor`.
#![no_std]
#![no_main]
// Inline assembly for the two atomic fetch-and-adds (core has no atomics for this target).
#![feature(asm_experimental_arch)]

mod atomic;
mod parse;
mod pkt;
#[path = "monitor_prog.rs"]
mod prog;

/// No packet is ever held: the compiler drops the hold and its busy wait.
#[inline(always)]
fn hold_ns() -> u32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
