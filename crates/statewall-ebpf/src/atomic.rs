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
