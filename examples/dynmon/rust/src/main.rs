//! A statewall dynamic monitor written in Rust with aya-ebpf: per (protocol, destination
//! port) packet and byte counts kept per CPU, the last packet length per source address,
//! and one ring-buffer record per TCP SYN.
//!
//! Maps are declared with `aya_ebpf::btf_maps`, so the object's BTF says each map's key
//! and value types, and statewall decodes them with no code of its own for this program.
//! Metric declarations: `ports.toml` beside this crate.
#![no_std]
#![no_main]

use aya_ebpf::{
    btf_maps::{LruHashMap, PerCpuHashMap, RingBuf},
    macros::{btf_map, classifier},
    programs::TcContext,
};

/// Key of the per-port counters: integers only, so each entry becomes one labelled
/// OpenMetrics series (`proto`, `port`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PortKey {
    /// IP protocol number.
    pub proto: u32,
    /// Destination port, host order.
    pub port: u32,
}

/// Packets and bytes (IP total length).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
}

/// One TCP SYN: addresses as the packet's 4 bytes, ports in host order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Syn {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
}

#[btf_map]
static PORTS: PerCpuHashMap<PortKey, Counts, 4096> = PerCpuHashMap::new();

#[btf_map]
static LAST_LEN: LruHashMap<u32, u32, 1024> = LruHashMap::new();

#[btf_map]
static SYNS: RingBuf<Syn, 65536> = RingBuf::new();

/// `TC_ACT_UNSPEC` (`TCX_NEXT` on tcx): no verdict, the chain goes on.
const NEXT: i32 = -1;

#[classifier]
pub fn count_ports(ctx: TcContext) -> i32 {
    let _ = try_count(&ctx);
    NEXT
}

#[inline(always)]
fn try_count(ctx: &TcContext) -> Result<(), ()> {
    // Ethernet, then IPv4 without options.
    let ethertype: u16 = ctx.load(12).map_err(|_| ())?;
    if u16::from_be(ethertype) != 0x0800 {
        return Ok(());
    }
    let vihl: u8 = ctx.load(14).map_err(|_| ())?;
    if vihl != 0x45 {
        return Ok(());
    }
    let tot_len = u16::from_be(ctx.load::<u16>(16).map_err(|_| ())?) as u32;
    let proto: u8 = ctx.load(23).map_err(|_| ())?;
    let saddr: u32 = ctx.load(26).map_err(|_| ())?;
    let daddr: u32 = ctx.load(30).map_err(|_| ())?;
    let (mut sport, mut dport) = (0u16, 0u16);
    if proto == 6 || proto == 17 {
        sport = u16::from_be(ctx.load(34).map_err(|_| ())?);
        dport = u16::from_be(ctx.load(36).map_err(|_| ())?);
    }
    let key = PortKey {
        proto: proto as u32,
        port: dport as u32,
    };
    // Per-CPU values: no other CPU writes this copy, so no atomics are needed.
    match PORTS.get_ptr_mut(key) {
        Some(c) => unsafe {
            (*c).packets += 1;
            (*c).bytes += tot_len as u64;
        },
        None => {
            let _ = PORTS.insert(
                key,
                Counts {
                    packets: 1,
                    bytes: tot_len as u64,
                },
                0,
            );
        }
    }
    let _ = LAST_LEN.insert(saddr, tot_len, 0);
    if proto == 6 {
        let flags: u8 = ctx.load(47).map_err(|_| ())?;
        if flags & 0x12 == 0x02 {
            let _ = SYNS.output(
                Syn {
                    saddr,
                    daddr,
                    sport,
                    dport,
                },
                0,
            );
        }
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
