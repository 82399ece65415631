//! The parsed packet, shared by both objects: parsing a tc packet or an XDP frame into the
//! per-CPU slot.

use aya_ebpf::{
    macros::map,
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};
use statewall_common::parse::PacketInfo;

use crate::parse::Cursor;

/// Bytes pulled into the linear area when a tc packet's headers are not all there.
const PULL_LEN: u32 = 640;

/// Parses a tc packet, pulling non-linear headers in first.
#[inline(always)]
pub(crate) fn parse_tc(ctx: &TcContext, p: &mut PacketInfo) {
    let len = ctx.len();
    let want = if len < PULL_LEN { len } else { PULL_LEN };
    if ((ctx.data_end() - ctx.data()) as u32) < want {
        let _ = ctx.pull_data(want);
    }
    // SAFETY: reading two fields of the program's own __sk_buff.
    let (present, tci) = unsafe { ((*ctx.skb.skb).vlan_present, (*ctx.skb.skb).vlan_tci) };
    let c = Cursor {
        start: ctx.data(),
        end: ctx.data_end(),
        len: len as usize,
        offloaded_vlan: if present != 0 { 0x10000 | tci } else { 0 },
    };
    crate::parse::parse(&c, p);
}

/// Parses an XDP frame.
#[inline(always)]
#[allow(dead_code)] // the monitor object has no XDP program
pub(crate) fn parse_xdp(ctx: &XdpContext, p: &mut PacketInfo) {
    let (start, end) = (ctx.data(), ctx.data_end());
    let c = Cursor {
        start,
        end,
        len: end - start,
        offloaded_vlan: 0,
    };
    crate::parse::parse(&c, p);
}

/// Per-CPU room for the parsed packet: kept out of the stack, where LLVM would either
/// split it into byte-sized scalars or zero it with a byte-at-a-time `memset` call.
#[map(name = "SW_SCRATCH")]
pub(crate) static SW_SCRATCH: PerCpuArray<PacketInfo> = PerCpuArray::with_max_entries(1, 0);

/// The per-CPU parsed-packet slot, zeroed with word stores (not `memset`).
#[inline(always)]
pub(crate) fn scratch() -> Option<&'static mut PacketInfo> {
    const WORDS: usize = core::mem::size_of::<PacketInfo>() / 8;
    const _: () = assert!(core::mem::size_of::<PacketInfo>() % 8 == 0);
    let p = SW_SCRATCH.get_ptr_mut(0)?;
    let w = p as *mut u64;
    let mut i = 0;
    while i < WORDS {
        // SAFETY: `p` points to a map value of `WORDS` u64s, 8-byte aligned.
        unsafe { core::ptr::write_volatile(w.add(i), 0) };
        i += 1;
    }
    // SAFETY: a per-CPU map value; programs do not nest on one CPU for these hooks.
    Some(unsafe { &mut *p })
}
