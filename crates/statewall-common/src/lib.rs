//! Types shared across the kernel boundary, and the reference logic.
//!
//! Everything here is `no_std` so that the kernel crate (`statewall-ebpf`, built for
//! `bpfel-unknown-none`) and user space (`statewall`) use the very same definitions:
//!
//! - [`parse`]: the slice-based packet parser, the twin of the kernel's pointer-based one.
//!   Tests run both on the same bytes and require equal [`parse::PacketInfo`]s.
//! - [`maps`]: `#[repr(C)]` keys and values of every map, with explicit padding, and the
//!   map names user space opens by.
//! - [`detect`]: the allowlist and source blocks of the `detect` stage.
//! - [`gate`]: the reference decision of the `gate` stage (protected ports and grants).
//! - [`spa`]: how the `spa` stage picks candidates out and rate-limits them.
//! - [`xfsm`]: the OpenState engine's tables and its decision logic, run by the kernel
//!   program over BPF maps and by tests over plain maps.
//!
//! ```
//! use statewall_common::parse::{parse_packet, Status};
//! // 14-byte Ethernet header with an ARP ethertype: not IP, passes through every stage.
//! let mut arp = [0u8; 42];
//! arp[12] = 0x08; arp[13] = 0x06;
//! assert_eq!(parse_packet(&arp).status, Status::NonIp as u8);
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod ct;
pub mod ct_state;
pub mod detect;
pub mod firewall;
pub mod frag;
pub mod gate;
pub mod maps;
pub mod mem;
pub mod monitor;
pub mod parse;
pub mod reset;
pub mod spa;
pub mod unreach;
pub mod xfsm;

/// tcx verdict: hand the packet to the next program on the hook. Every stage returns this
/// or [`TC_ACT_SHOT`], never `TC_ACT_OK`/`TCX_PASS`, which would end the chain.
pub const TCX_NEXT: i32 = -1;
/// tcx/tc verdict: drop the packet.
pub const TC_ACT_SHOT: i32 = 2;
/// XDP verdicts.
pub const XDP_DROP: u32 = 1;
/// XDP verdict: pass to the stack.
pub const XDP_PASS: u32 = 2;
