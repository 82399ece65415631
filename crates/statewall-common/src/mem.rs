//! Copies and clears that stay loads and stores in the kernel object.
//!
//! For BPF, LLVM turns a struct assignment or a zeroing it cannot expand (a large one, or
//! one between byte-aligned places) into a call to `memmove`/`memset`, which the BPF
//! linker provides as a loop over single bytes: about 8 instructions a byte, so copying a
//! 328-byte condition set cost more than everything else a machine does. These helpers go
//! a word (or, for byte arrays, a byte) at a time through volatile accesses, which LLVM may
//! not merge back into such a call. In user space they are ordinary (if slower) copies.

use core::mem::{align_of, size_of};
use core::ptr::{read_volatile, write_volatile};

/// `*dst = *src` for a type made of whole, aligned 64-bit words.
#[inline(always)]
pub fn copy_words<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let (d, s) = (dst as *mut T as *mut u64, src as *const T as *const u64);
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: both point at a `T`, which is `size_of::<T>() / 8` aligned words.
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
        i += 1;
    }
}

/// Sets a type made of whole, aligned 64-bit words to all zero bits (every type this is
/// used on has zero as its default).
#[inline(always)]
pub fn zero_words<T: Copy>(dst: &mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let d = dst as *mut T as *mut u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // SAFETY: as in `copy_words`.
        unsafe { write_volatile(d.add(i), 0) };
        i += 1;
    }
}

/// Word `i` (0 to 3) of a 16-byte address, read as one 32-bit load (byte by byte, BPF
/// needs four loads, shifts and ors for each word).
///
/// # Safety
/// `a` is 4-aligned: the addresses of `PacketInfo` and of the map keys built from them are
/// (each type asserts it where it is defined or filled).
#[inline(always)]
pub unsafe fn addr_word(a: &[u8; 16], i: usize) -> u32 {
    // SAFETY: `i & 3 < 4` words of 16 bytes; aligned by the caller's contract.
    unsafe { core::ptr::read(a.as_ptr().add(4 * (i & 3)) as *const u32) }
}

/// `*dst = *src` for two 16-byte addresses, a 32-bit word at a time.
///
/// # Safety
/// Both are 4-aligned, as for [`addr_word`].
#[inline(always)]
pub unsafe fn copy_addr(dst: &mut [u8; 16], src: &[u8; 16]) {
    let d = dst.as_mut_ptr() as *mut u32;
    let mut i = 0;
    while i < 4 {
        // SAFETY: `i < 4` words of 16 bytes; aligned by the caller's contract.
        unsafe { core::ptr::write(d.add(i), addr_word(src, i)) };
        i += 1;
    }
}

/// `a == b` for two 16-byte addresses, a 32-bit word at a time.
///
/// # Safety
/// Both are 4-aligned, as for [`addr_word`].
#[inline(always)]
pub unsafe fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    // SAFETY: the caller's contract.
    unsafe {
        addr_word(a, 0) == addr_word(b, 0)
            && addr_word(a, 1) == addr_word(b, 1)
            && addr_word(a, 2) == addr_word(b, 2)
            && addr_word(a, 3) == addr_word(b, 3)
    }
}

/// `*dst = *src` for a byte array, a byte at a time (the source may be packet data, with
/// no alignment).
#[inline(always)]
pub fn copy_bytes<const N: usize>(dst: &mut [u8; N], src: &[u8; N]) {
    let mut i = 0;
    while i < N {
        // SAFETY: `i < N` in both arrays.
        unsafe { write_volatile(dst.as_mut_ptr().add(i), read_volatile(src.as_ptr().add(i))) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_clears() {
        let src = [1u64, u64::MAX, 3, 0x8000_0000_0000_0000];
        let mut dst = [0u64; 4];
        copy_words(&mut dst, &src);
        assert_eq!(dst, src);
        zero_words(&mut dst);
        assert_eq!(dst, [0; 4]);
        let mut b = [0u8; 6];
        copy_bytes(&mut b, &[1, 2, 3, 4, 5, 255]);
        assert_eq!(b, [1, 2, 3, 4, 5, 255]);
    }
}
