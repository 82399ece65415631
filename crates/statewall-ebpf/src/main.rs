//! statewall's kernel programs, one ELF object for `bpfel-unknown-none`.
//!
//! Every tc program returns `TCX_NEXT` or `TC_ACT_SHOT`, never `TC_ACT_OK`, so that the
//! stages after it on the tcx hook still run. Programs:
//!
//! | program | hook | what |
//! | --- | --- | --- |
//! | `sw_detect` | tcx ingress, first | `[detect]` source blocks (the allowlist never blocked) |
//! | `sw_xfsm` | tcx ingress | OpenState engine (port knocking, raw machines), before the gate |
//! | `sw_xfsm_egress` | tcx egress | the same engine for packets leaving (raw machines) |
//! | `sw_gate` | tcx | SPA candidates to user space (dropped), then protected ports: refused unless a grant exists (dropped, or answered as a closed port: RST, ICMP port unreachable) |
//! | `sw_switch` | tcx ingress, last | `[[switch]]` ports: their machines, then forward or flood |
//! | `sw_xdp_ingress` | xdp | the ingress stages in one program: detect, xfsm, spa, gate |
//! | `sw_parse_tc`, `sw_parse_xdp` | test-run only | write the parser's result to `SW_PARSE_OUT` |
//! | `sw_empty_tc`, `sw_empty_xdp` | bench baseline | do nothing |
//!
//! Each program's body is `#[inline(always)]`: aya's macro nests it in the exported
//! function, and a body the compiler kept out of line cost every packet a call and a return
//! through the kernel's return thunk (2 ns of the firewall's 90 at 10,000 rules).
#![no_std]
#![no_main]
#![no_builtins]
#![feature(asm_experimental_arch)]

mod atomic;
mod bench_policer;
mod bench_synguard;
mod clock;
mod detect;
mod firewall;
mod frag;
mod gate;
mod parse;
mod pkt;
mod spa;
mod xfsm;

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::generated::{
        bpf_clone_redirect, bpf_l3_csum_replace, bpf_redirect, bpf_skb_change_tail,
        bpf_skb_load_bytes, bpf_skb_store_bytes, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{classifier, map, xdp},
    maps::Array,
    programs::{TcContext, XdpContext},
};
use statewall_common::{
    parse::PacketInfo,
    reset::{self, VERDICT_RESET},
    unreach::{self, QUOTE_V4, QUOTE_V6, VERDICT_UNREACH},
    xfsm::{
        acts::{act, SwitchDef, MAX_SWITCH_PORTS},
        DIR_EGRESS, DIR_INGRESS,
    },
    TCX_NEXT, TC_ACT_SHOT,
};

use crate::pkt::{parse_tc, parse_xdp, scratch};

#[map(name = "SW_PARSE_OUT")]
static SW_PARSE_OUT: Array<PacketInfo> = Array::with_max_entries(1, 0);

#[classifier]
#[inline(always)]
pub fn sw_gate(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    frag::ports(p);
    if !spa::run(p, |dst, off, len, max| load_tc(&ctx, dst, off, len, max)) {
        return TC_ACT_SHOT;
    }
    match gate::run(p) {
        VERDICT_RESET => reset_tc(&ctx, p),
        VERDICT_UNREACH => unreach_tc(&ctx, p),
        v => v,
    }
}

/// Turns a refused UDP packet into the ICMP port unreachable that answers it (see
/// `statewall_common::unreach`) and sends it back out of the interface it came in on;
/// drops it when that fails. Not inlined: its buffers stay out of the gate's frame.
#[inline(never)]
fn unreach_tc(ctx: &TcContext, p: &PacketInfo) -> i32 {
    let skb = ctx.skb.skb;
    let l3 = p.l3_off as u32;
    let mut quote = [0u8; 48];
    let v6 = p.family == 6;
    let loaded = unsafe {
        if v6 {
            bpf_skb_load_bytes(
                skb as *const c_void,
                l3,
                quote.as_mut_ptr() as *mut c_void,
                QUOTE_V6,
            )
        } else {
            bpf_skb_load_bytes(
                skb as *const c_void,
                l3,
                quote.as_mut_ptr() as *mut c_void,
                QUOTE_V4,
            )
        }
    };
    if loaded != 0 {
        return TC_ACT_SHOT;
    }
    let Some(u) = unreach::build(p, &quote) else {
        return TC_ACT_SHOT;
    };
    let (icmp_at, quote_at) = (l3 + u.l3_len, l3 + u.l3_len + 8);
    let mut mac = [0u8; 12];
    let mut swapped = [0u8; 12];
    unsafe {
        if bpf_skb_change_tail(skb, quote_at + u.quote_len, 0) != 0
            || bpf_skb_load_bytes(skb as *const c_void, 0, mac.as_mut_ptr() as *mut c_void, 12) != 0
        {
            return TC_ACT_SHOT;
        }
        swapped[..6].copy_from_slice(&mac[6..]);
        swapped[6..].copy_from_slice(&mac[..6]);
        let q = quote.as_ptr() as *const c_void;
        let ok = bpf_skb_store_bytes(
            skb,
            0,
            swapped.as_ptr() as *const c_void,
            12,
            RECOMPUTE_CSUM,
        ) == 0
            && if v6 {
                bpf_skb_store_bytes(skb, l3, u.l3.as_ptr() as *const c_void, 40, RECOMPUTE_CSUM)
                    == 0
                    && bpf_skb_store_bytes(skb, quote_at, q, QUOTE_V6, RECOMPUTE_CSUM) == 0
            } else {
                bpf_skb_store_bytes(skb, l3, u.l3.as_ptr() as *const c_void, 20, RECOMPUTE_CSUM)
                    == 0
                    && bpf_skb_store_bytes(skb, quote_at, q, QUOTE_V4, RECOMPUTE_CSUM) == 0
            }
            && bpf_skb_store_bytes(
                skb,
                icmp_at,
                u.icmp.as_ptr() as *const c_void,
                8,
                RECOMPUTE_CSUM,
            ) == 0;
        if !ok {
            return TC_ACT_SHOT;
        }
        bpf_redirect((*skb).ifindex, 0) as i32
    }
}

/// The same for XDP: the frame grown or cut to the answer's size, sent with `XDP_TX`.
#[inline(never)]
fn unreach_xdp(ctx: &XdpContext, p: &PacketInfo) -> u32 {
    let x = ctx.ctx;
    let l3 = p.l3_off as u32;
    let mut quote = [0u8; 48];
    let v6 = p.family == 6;
    let loaded = unsafe {
        if v6 {
            bpf_xdp_load_bytes(x, l3, quote.as_mut_ptr() as *mut c_void, QUOTE_V6)
        } else {
            bpf_xdp_load_bytes(x, l3, quote.as_mut_ptr() as *mut c_void, QUOTE_V4)
        }
    };
    if loaded != 0 {
        return xdp_action::XDP_DROP;
    }
    let Some(u) = unreach::build(p, &quote) else {
        return xdp_action::XDP_DROP;
    };
    let (icmp_at, quote_at) = (l3 + u.l3_len, l3 + u.l3_len + 8);
    let cur = unsafe { bpf_xdp_get_buff_len(x) } as i32;
    let mut mac = [0u8; 12];
    let mut swapped = [0u8; 12];
    unsafe {
        if bpf_xdp_adjust_tail(x, (quote_at + u.quote_len) as i32 - cur) != 0
            || bpf_xdp_load_bytes(x, 0, mac.as_mut_ptr() as *mut c_void, 12) != 0
        {
            return xdp_action::XDP_DROP;
        }
        swapped[..6].copy_from_slice(&mac[6..]);
        swapped[6..].copy_from_slice(&mac[..6]);
        let q = quote.as_ptr() as *mut c_void;
        let ok = bpf_xdp_store_bytes(x, 0, swapped.as_ptr() as *mut c_void, 12) == 0
            && if v6 {
                bpf_xdp_store_bytes(x, l3, u.l3.as_ptr() as *mut c_void, 40) == 0
                    && bpf_xdp_store_bytes(x, quote_at, q, QUOTE_V6) == 0
            } else {
                bpf_xdp_store_bytes(x, l3, u.l3.as_ptr() as *mut c_void, 20) == 0
                    && bpf_xdp_store_bytes(x, quote_at, q, QUOTE_V4) == 0
            }
            && bpf_xdp_store_bytes(x, icmp_at, u.icmp.as_ptr() as *mut c_void, 8) == 0;
        if !ok {
            return xdp_action::XDP_DROP;
        }
    }
    xdp_action::XDP_TX
}

/// `BPF_F_RECOMPUTE_CSUM`: keep `skb->csum` right for the bytes rewritten.
const RECOMPUTE_CSUM: u64 = 1;

/// Turns a refused SYN into the reset that answers it and sends it back out of the
/// interface it came in on (see `statewall_common::reset`); drops it when that fails.
/// Not inlined: its buffers stay out of the gate program's frame.
#[inline(never)]
fn reset_tc(ctx: &TcContext, p: &PacketInfo) -> i32 {
    let Some(r) = reset::build(p) else {
        return TC_ACT_SHOT;
    };
    let skb = ctx.skb.skb;
    let (l3, l4) = (p.l3_off as u32, p.l4_off as u32);
    let mut mac = [0u8; 12];
    let mut swapped = [0u8; 12];
    unsafe {
        if bpf_skb_change_tail(skb, l4 + 20, 0) != 0
            || bpf_skb_load_bytes(skb as *const c_void, 0, mac.as_mut_ptr() as *mut c_void, 12) != 0
        {
            return TC_ACT_SHOT;
        }
        swapped[..6].copy_from_slice(&mac[6..]);
        swapped[6..].copy_from_slice(&mac[..6]);
        let ok = bpf_skb_store_bytes(
            skb,
            0,
            swapped.as_ptr() as *const c_void,
            12,
            RECOMPUTE_CSUM,
        ) == 0
            && if r.l3_len == 40 {
                bpf_skb_store_bytes(skb, l3, r.l3.as_ptr() as *const c_void, 40, RECOMPUTE_CSUM)
                    == 0
            } else {
                bpf_skb_store_bytes(skb, l3, r.l3.as_ptr() as *const c_void, 20, RECOMPUTE_CSUM)
                    == 0
            }
            && bpf_skb_store_bytes(skb, l4, r.tcp.as_ptr() as *const c_void, 20, RECOMPUTE_CSUM)
                == 0;
        if !ok {
            return TC_ACT_SHOT;
        }
        bpf_redirect((*skb).ifindex, 0) as i32
    }
}

/// The same for XDP: answered with `XDP_TX`. Not inlined: its locals would otherwise add
/// to the frame of the program that also runs the xfsm loop (512 bytes in all).
#[inline(never)]
fn reset_xdp(ctx: &XdpContext, p: &PacketInfo) -> u32 {
    let Some(r) = reset::build(p) else {
        return xdp_action::XDP_DROP;
    };
    let (l3, l4) = (p.l3_off as u32, p.l4_off as u32);
    let cur = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as i32;
    let mut mac = [0u8; 12];
    let mut swapped = [0u8; 12];
    let x = ctx.ctx;
    unsafe {
        if bpf_xdp_adjust_tail(x, (l4 + 20) as i32 - cur) != 0
            || bpf_xdp_load_bytes(x, 0, mac.as_mut_ptr() as *mut c_void, 12) != 0
        {
            return xdp_action::XDP_DROP;
        }
        swapped[..6].copy_from_slice(&mac[6..]);
        swapped[6..].copy_from_slice(&mac[..6]);
        let ok = bpf_xdp_store_bytes(x, 0, swapped.as_ptr() as *mut c_void, 12) == 0
            && if r.l3_len == 40 {
                bpf_xdp_store_bytes(x, l3, r.l3.as_ptr() as *mut c_void, 40) == 0
            } else {
                bpf_xdp_store_bytes(x, l3, r.l3.as_ptr() as *mut c_void, 20) == 0
            }
            && bpf_xdp_store_bytes(x, l4, r.tcp.as_ptr() as *mut c_void, 20) == 0;
        if !ok {
            return xdp_action::XDP_DROP;
        }
    }
    xdp_action::XDP_TX
}

/// Copies `len` bytes (1..=`max`, `max` a constant at every call) of a tc packet from
/// `off` to `dst`, which has room for `max`.
#[inline(always)]
fn load_tc(ctx: &TcContext, dst: *mut u8, off: u32, len: u32, max: u32) -> bool {
    // Read through a volatile so that LLVM keeps the bounds check next to the call (the
    // verifier needs it on the very register passed as the length).
    let n = unsafe { core::ptr::read_volatile(&len) };
    if n == 0 || n > max {
        return false;
    }
    unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const c_void, off, dst as *mut c_void, n) == 0 }
}

/// The same for an XDP frame.
#[inline(always)]
fn load_xdp(ctx: &XdpContext, dst: *mut u8, off: u32, len: u32, max: u32) -> bool {
    let n = unsafe { core::ptr::read_volatile(&len) };
    if n == 0 || n > max {
        return false;
    }
    unsafe { bpf_xdp_load_bytes(ctx.ctx, off, dst as *mut c_void, n) == 0 }
}

#[inline(always)]
fn xfsm_tc(ctx: &TcContext, dir: u8) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(ctx, p);
    frag::ports(p);
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let r = xfsm::run(p, dir, |dst, off, len, max| {
        load_tc(ctx, dst, off, len, max)
    });
    if r & xfsm::DROPPED != 0 {
        return TC_ACT_SHOT;
    }
    if r != 0 {
        mark_tc(ctx, p, r);
    }
    TCX_NEXT
}

/// Sets the packet mark and the DSCP when the machines' actions `fx` ask for them.
#[inline(never)]
fn mark_tc(ctx: &TcContext, p: &PacketInfo, fx: u32) {
    let (mark, dscp, _) = xfsm::actions();
    let skb = ctx.skb.skb;
    if fx & act::MARK as u32 != 0 {
        unsafe { (*skb).mark = mark };
    }
    if fx & act::DSCP as u32 == 0 || !p.is_ip() {
        return;
    }
    let l3 = p.l3_off as u32;
    let mut b = [0u8; 2];
    unsafe {
        if bpf_skb_load_bytes(skb as *const c_void, l3, b.as_mut_ptr() as *mut c_void, 2) != 0 {
            return;
        }
        let old = b;
        let d = (dscp as u8) & 63;
        if p.family == 4 {
            // Version/IHL, then TOS: DSCP in its top 6 bits, ECN kept.
            b[1] = d << 2 | (b[1] & 3);
            let (from, to) = (u16::from_ne_bytes(old), u16::from_ne_bytes(b));
            if bpf_l3_csum_replace(skb, l3 + 10, from as u64, to as u64, 2) != 0 {
                return;
            }
        } else {
            // Version (4 bits), traffic class (8: DSCP, ECN), flow label.
            let tc = (b[0] & 0x0f) << 4 | b[1] >> 4;
            let tc = d << 2 | (tc & 3);
            b[0] = (b[0] & 0xf0) | tc >> 4;
            b[1] = (b[1] & 0x0f) | tc << 4;
        }
        // IPv4: the header checksum moved with the TOS, so the sum over the header (and
        // `skb->csum`) is unchanged; IPv6 has no header checksum: `skb->csum` is updated.
        let flags = if p.family == 4 { 0 } else { RECOMPUTE_CSUM };
        let _ = bpf_skb_store_bytes(skb, l3, b.as_ptr() as *const c_void, 2, flags);
    }
}

/// The `[[switch]]` ports' program, last on their tcx ingress: the switch's machines, then
/// the frame forwarded where they said (see `statewall_common::xfsm::acts`).
#[classifier]
#[inline(always)]
pub fn sw_switch(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    frag::ports(p);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    p.ifindex = ifindex;
    let Some(id) = (unsafe { xfsm::SW_SWITCH_IF.get(&ifindex) }).copied() else {
        return TCX_NEXT;
    };
    let Some(sw) = xfsm::SW_SWITCH.get(id) else {
        return TCX_NEXT;
    };
    let r = xfsm::run_switch(p, sw);
    if r & xfsm::DROPPED != 0 {
        return TC_ACT_SHOT;
    }
    if r & (act::MARK | act::DSCP) as u32 != 0 {
        mark_tc(&ctx, p, r);
    }
    if r & act::FWD as u32 == 0 {
        return TCX_NEXT;
    }
    forward(&ctx, sw, ifindex)
}

/// Forwards a switch frame that arrived on `from` to the port the machines chose; floods
/// it to every other port when they chose none of the switch's ports (0: flood, or an
/// unknown destination). A frame for the port it came from goes nowhere (a switch does
/// not send it back).
#[inline(never)]
fn forward(ctx: &TcContext, sw: &SwitchDef, from: u32) -> i32 {
    let (_, _, to) = xfsm::actions();
    if to == from {
        return TC_ACT_SHOT;
    }
    if to != 0 && sw.has(to) {
        return unsafe { bpf_redirect(to, 0) } as i32;
    }
    let mut i = 0;
    while i < MAX_SWITCH_PORTS {
        let port = sw.ports[i];
        if (i as u32) < sw.n && port != from {
            let _ = unsafe { bpf_clone_redirect(ctx.skb.skb, port, 0) };
        }
        i += 1;
    }
    TC_ACT_SHOT
}

/// The firewall chain of the packet's interface, ingress.
#[classifier]
#[inline(always)]
pub fn sw_fw_ingress(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    frag::ports(p);
    let load = |dst, off, len, max| load_tc(&ctx, dst, off, len, max);
    firewall::run::<true, _>(p, unsafe { (*ctx.skb.skb).ifindex }, 0, false, load)
}

/// The same, egress.
#[classifier]
#[inline(always)]
pub fn sw_fw_egress(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    frag::ports(p);
    let load = |dst, off, len, max| load_tc(&ctx, dst, off, len, max);
    firewall::run::<true, _>(p, unsafe { (*ctx.skb.skb).ifindex }, 1, false, load)
}

/// The firewall's ingress chain in XDP, on a parsed packet (a call of its own: the XDP
/// ingress program's stack holds the other stages too); `DIRECT`: as `firewall::run`.
#[inline(never)]
fn fw_xdp<const DIRECT: bool>(ctx: &XdpContext, p: &PacketInfo) -> u32 {
    let load = |dst, off, len, max| load_xdp(ctx, dst, off, len, max);
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if firewall::run::<DIRECT, _>(p, ifindex, 0, true, load) == TC_ACT_SHOT {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// The firewall's ingress chains in XDP, on interfaces where the gates do not run in XDP
/// (an XDP firewall instance).
#[xdp]
#[inline(always)]
pub fn sw_fw_xdp(ctx: XdpContext) -> u32 {
    let Some(p) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    parse_xdp(&ctx, p);
    frag::ports(p);
    fw_xdp::<true>(&ctx, p)
}

/// The `detect` stage's source blocks, first on tcx ingress.
#[classifier]
#[inline(always)]
pub fn sw_detect(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    if detect::run(p) && detect::destination(p) {
        TCX_NEXT
    } else {
        TC_ACT_SHOT
    }
}

#[classifier]
#[inline(always)]
pub fn sw_xfsm(ctx: TcContext) -> i32 {
    xfsm_tc(&ctx, DIR_INGRESS)
}

#[classifier]
#[inline(always)]
pub fn sw_xfsm_egress(ctx: TcContext) -> i32 {
    xfsm_tc(&ctx, DIR_EGRESS)
}

/// XDP ingress: the ingress stages in chain order in one program (parse once): detect's
/// blocks, xfsm, gate,
/// then the firewall's ingress chain of the interface's instance when it runs in XDP.
#[xdp]
#[inline(always)]
pub fn sw_xdp_ingress(ctx: XdpContext) -> u32 {
    let Some(p) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    parse_xdp(&ctx, p);
    frag::ports(p);
    p.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    if !detect::run(p) || !detect::destination(p) {
        return xdp_action::XDP_DROP;
    }
    let load = |dst, off, len, max| load_xdp(&ctx, dst, off, len, max);
    // (No marks or DSCP in XDP: the config refuses them where the stages run in XDP.)
    if xfsm::run(p, DIR_INGRESS, load) & xfsm::DROPPED != 0 || !spa::run(p, load) {
        return xdp_action::XDP_DROP;
    }
    match gate::run(p) {
        TCX_NEXT => fw_xdp::<false>(&ctx, p),
        VERDICT_RESET => reset_xdp(&ctx, p),
        VERDICT_UNREACH => unreach_xdp(&ctx, p),
        _ => xdp_action::XDP_DROP,
    }
}

#[classifier]
#[inline(always)]
pub fn sw_parse_tc(ctx: TcContext) -> i32 {
    if let Some(out) = SW_PARSE_OUT.get_ptr_mut(0) {
        let out = unsafe { &mut *out };
        *out = PacketInfo::default();
        parse_tc(&ctx, out);
    }
    TCX_NEXT
}

#[xdp]
#[inline(always)]
pub fn sw_parse_xdp(ctx: XdpContext) -> u32 {
    if let Some(out) = SW_PARSE_OUT.get_ptr_mut(0) {
        let out = unsafe { &mut *out };
        *out = PacketInfo::default();
        parse_xdp(&ctx, out);
    }
    xdp_action::XDP_PASS
}

#[classifier]
#[inline(always)]
pub fn sw_empty_tc(_ctx: TcContext) -> i32 {
    TCX_NEXT
}

#[xdp]
#[inline(always)]
pub fn sw_empty_xdp(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The benchmark's traffic generator (never attached): run with BPF_PROG_TEST_RUN's live
/// frames on one end of a veth pair, it sends each frame out of that end, to the peer.
#[xdp]
#[inline(always)]
pub fn sw_bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// A policer written by hand (never attached): the yardstick of the extended machines'
/// benchmark ([`bench_policer`]).
#[classifier]
#[inline(always)]
pub fn sw_bench_policer(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    if bench_policer::run(p, crate::clock::now_ns()) {
        TCX_NEXT
    } else {
        TC_ACT_SHOT
    }
}

/// `examples/efsm/syn-flood.toml` written by hand (never attached): the yardstick of its
/// benchmark row ([`bench_synguard`]).
#[classifier]
#[inline(always)]
pub fn sw_bench_synguard(ctx: TcContext) -> i32 {
    let Some(p) = scratch() else {
        return TCX_NEXT;
    };
    parse_tc(&ctx, p);
    if bench_synguard::run(p, crate::clock::now_ns()) {
        TCX_NEXT
    } else {
        TC_ACT_SHOT
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
