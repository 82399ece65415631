//! Atomic read-modify-write on map memory shared by every CPU.

/// Atomically adds `v` to `*p` and returns the old value (BPF_ATOMIC | BPF_FETCH).
#[inline(always)]
pub(crate) fn fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut r = v;
    // SAFETY: `p` points into a map value the caller owns a reference to.
    unsafe {
        core::arch::asm!(
            "{r} = atomic_fetch_add((u64 *)({p} + 0), {r})",
            p = in(reg) p,
            r = inout(reg) r,
        );
    }
    r
}

/// Atomically replaces `*p` with `new` if it holds `old`; returns what it held
/// (BPF_ATOMIC | BPF_CMPXCHG: the swap happened when that equals `old`).
#[inline(always)]
#[allow(dead_code)] // the monitor objects' only
pub(crate) fn cmpxchg(p: *mut u64, old: u64, new: u64) -> u64 {
    let mut r0 = old;
    // SAFETY: `p` points into a map value the caller owns a reference to.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {n})",
            p = in(reg) p,
            n = in(reg) new,
            inout("r0") r0,
        );
    }
    r0
}
